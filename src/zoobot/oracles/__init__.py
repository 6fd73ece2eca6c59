"""Oracles answer vote requests: one contract (``base``), a registry of kinds (``registry``).

Built-in kinds register themselves when this package is imported: ``simulated``, ``panoptes``, ``web``.
"""

from zoobot.oracles import simulated  # noqa: F401  (registers the kind)
from zoobot.oracles import panoptes  # noqa: F401  (registers the kind)
from zoobot.oracles import web  # noqa: F401  (registers the kind)
from zoobot.oracles.base import Delivery, Oracle
from zoobot.oracles.registry import list_oracles, open_oracle, oracle_class, oracle_settings, register_oracle

__all__ = ["Delivery", "Oracle", "list_oracles", "open_oracle", "oracle_class", "oracle_settings", "register_oracle"]
