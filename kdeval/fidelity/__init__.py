"""Token-level fidelity of students to the teacher: `kdeval compare`'s fidelity phase.

measures.py  per-token rows and the measures (KL, reverse KL, JSD, top-1, NLL/perplexity, ECE)
sequences.py the teacher's own outputs, as token sequences the student is teacher-forced on
compute.py   the teacher-forced passes (transformers student; dense or served top-k teacher)
"""
