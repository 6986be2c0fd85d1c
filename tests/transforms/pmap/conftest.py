"""pmap_devices.py sets the device count before JAX starts: test_pmap.py beside it runs
it in a subprocess; pytest must not import it."""

collect_ignore = ["pmap_devices.py"]
