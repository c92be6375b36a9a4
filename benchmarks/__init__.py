"""ELM Lab's benchmarks, one module per figure set; none is imported by the product.

    training     `elmlab bench`: training and forward throughput, FLOP/s, peak memory (docs/performance.md)
    store        `elmlab store bench` / `python -m benchmarks.store`: store queries before and after compaction
    dashboard    `python -m benchmarks.dashboard`: the pages' data work over a large store (docs/dashboard.md)
    submission   `python -m benchmarks.submission`: time to queue runs, embedded and on Redis (docs/queue.md)
"""
