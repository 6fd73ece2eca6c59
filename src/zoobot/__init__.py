"""zoobot: Bayesian deep active learning on Galaxy Zoo volunteer votes."""

__version__ = "0.1.0"
