"""Model components: native-resolution ViT, pixel-shuffle projector, the composite VLM (ANDESVL.md §1)."""
