"""Nodes, instances and tasks: models, states, transitions and services."""
