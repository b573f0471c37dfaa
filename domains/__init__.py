"""First-party flowsci domain plugins (installed as ``flowsci_domains``).

Each subpackage is registered through the ``flowsci.domains`` entry-point group and imported
only when its domain is used.
"""
