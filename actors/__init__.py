"""The Ray layer: one role = one module = one actor class, each a thin wrapper over the core."""
