"""Command line interface: ``anomalyclip-med <command>``."""
