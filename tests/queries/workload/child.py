import slowmod  # noqa: F401  (its import is the cost)

print("child", slowmod.VALUE)
