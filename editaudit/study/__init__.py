"""A finished study, summarised and rendered: per run and per group (runs differing only by their seed) the edit's
success and what it cost in robustness, with intervals over seeds; the Pareto front of accuracy against robustness;
robustness by layer depth; 1-LI's alpha curves; the policy's recommendation; and Brown et al.'s four findings as
verdicts computed from the numbers. Torch-free and pure (no I/O): the service and bench/study.py build the rows.

    summary = summarise(rows, policy_name="default")    # editaudit.study.summary
    text = markdown(summary, meta)                       # editaudit.study.render: markdown, html, plots, as_json
"""
