import os

# Tests run on CPU; set before JAX is imported anywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
