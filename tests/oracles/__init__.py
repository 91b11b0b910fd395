"""Reference implementations used only by tests: slow, obvious versions of what the product does fast."""
