"""Durable stores for messages that could not be confirmed in time."""
