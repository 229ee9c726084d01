"""Scanners that measure safety properties of a model: bias (CrowS-Pairs) for now."""
