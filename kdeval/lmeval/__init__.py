"""lm-evaluation-harness tasks under kdeval's roles (the optional extra `kdeval[lm-eval]`).

lm-eval builds the tasks (its TaskManager, its prompts, few-shot and filters); kdeval runs their
requests through its own per-model backends and store, and scores each document with lm-eval's
own filters and `process_results`, so every number is lm-eval's. Nothing here is imported unless
a run names an lm-eval task.
"""
