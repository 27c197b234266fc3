"""The `.mar` contract: what a style archive holds, and the code shipped inside it.

`catalog` names styles and describes them; `archive` reads, finds, orders and
writes `.mar` files and their model-config.yaml; `payload/` is the folder
packed into every archive (handler, imaging, framing, acceleration and the
network). Training writes archives through this package and serving reads them
through it; it imports nothing else of toonbot's.
"""
