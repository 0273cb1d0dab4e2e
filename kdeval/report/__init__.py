"""Renderers: everything here reads a RunResult and never runs a model."""
