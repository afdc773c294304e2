"""Blauwe Knop gateway."""
