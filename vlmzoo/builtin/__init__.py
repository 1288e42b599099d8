"""Built-in plugins: the components, variants and samplers vlmzoo ships, registered through the same
hooks a third-party package uses."""
