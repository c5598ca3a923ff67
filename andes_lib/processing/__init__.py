"""Images, tokenizer and chat format (ANDESVL.md §1, SPEC §2)."""
