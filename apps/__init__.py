"""Gradio demos of the cookbook's model (see apps/chat.py)."""
