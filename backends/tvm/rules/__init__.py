"""Lowering rules, one module per group of ops; backends/tvm/table.py merges their RULES dicts."""
