"""Simulated-user evaluation of pointseg against the tools users would pick instead."""
