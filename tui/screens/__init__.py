"""Screens, one per operator task."""
