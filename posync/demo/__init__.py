"""A small POS, as a host app would write it: used by ``posync demo`` and by posync's own tests."""
