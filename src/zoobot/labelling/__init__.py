"""The local labelling page of the web oracle: ``app`` (routes, images), ``pages`` (HTML)."""
