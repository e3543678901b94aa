"""Graph-to-graph rewrites (the pattern matcher, the pass manager, each pass in its own file).

Layering: this package imports only ``graphdsl``.
"""
