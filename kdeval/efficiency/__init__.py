"""The cost side of a comparison: start-up, latency, throughput and memory, measured in their
own phase (never inferred from the batched quality run).

    probes.py   latency / throughput passes and their statistics (vLLM's benchmark method)
    engines.py  the vLLM and transformers backends seen by the probes
    memory.py   parameters, weight bytes, peak PSS of the process tree, NVML on GPUs
    machine.py  CPU, cores, GPU + driver, library versions
    prompts.py  the prompt sample: from the suites, a file, or the run's own tasks
    bench.py    `kdeval bench` and `measure_models`, the efficiency phase of `kdeval compare`

Nothing heavy is imported here. `RunResult.efficiency[model]` holds (figures in ms, MiB, /s)::

    device           "cpu: AMD EPYC (2 cores)" or the GPU name; the gate compares latency only
                     between runs on the same device
    backend, dtype   the engine and the dtype the weights were loaded in
    startup_s        engine start (tokenizer, weights, KV cache, worker processes)
    latency_ms       {mean, p50, p90, p99} end to end, batch-1 requests, the used repeats pooled
    ttft_ms          {mean, p50, p90, p99} time to first token;  ttft_method says how
    tpot_ms          {mean, p50, p90, p99} (E2E - TTFT) / (output tokens - 1)
    throughput       {requests_per_s, tokens_per_s (total, as vLLM), output_tokens_per_s,
                      total_tokens_per_s, elapsed_s}, all prompts at once, median repeat
    memory_mib       {weights (as loaded), kv_cache (vLLM's reservation; null on transformers),
                      peak, host_peak, host_before};  memory_source "pss" (CPU) | "nvml" (GPU)
    n_params, weight_bytes   from the checkpoint files
    output_tokens    {min, max, requested} per request: equal when every request made N tokens
    repeats          {n (repeats run), used (those the figures come from), stopped ("stable",
                      "budget", "max_repeats" or "fixed"), elapsed_s, budget_s, threshold,
                      latency_p50_ms {min, median, max}, output_tokens_per_s {min, median, max}}
    noisy, warnings  spread over repeats above 10%, or requests cut short
    engine           settings read back from the engine (vLLM: max_num_seqs, max_num_batched_tokens,
                     enforce_eager, dtype, prefix_caching, log_stats, ...), torch_threads_main and
                     processes [{pid, name, threads, cpus, env (OMP_*)}]
    workload, notes, machine, versions
"""
