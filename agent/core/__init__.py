"""What every stage of the pipeline shares, below them all: the model (``Fetched``, ``Snapshot``), the store,
the one retry policy, the one atomic single-file write, the one child-process helper, serving an aiohttp
app, and the garbage collector's pause while a command starts (``collector``)."""
