"""Files and values from outside: atomic writes, CSV rows, restricted unpickling, choice checks."""
