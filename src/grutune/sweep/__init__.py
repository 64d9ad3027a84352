"""A sweep: Ray Tune runs grutune's Optuna TPE searcher with ASHA early stopping, resumable from its Optuna journal.

- `definition`: what a sweep is, and its identity (settings and trial code);
- `driver`: runs, resumes, extends or re-reads one (`run_sweep`);
- `searcher`: the Tune `Searcher` on Optuna's ask-and-tell API;
- `recovery`: the crash-recovery protocol (the searcher's state file, what the journal says after a kill);
- `top_k`: the screen scheduler (`search.scheduler: top_k`);
- `full_storage`: a full storage stops the sweep as a kill would;
- `binding`: where a sweep's study is and how it runs, for this process;
- `journal`: what the Optuna journal holds, its repair and its readers;
- `storage`: the sweep's folder, its Tune experiments, its journal's copy in cloud storage;
- `budget`: ASHA's arithmetic, what a budget pays for, spend;
- `results`: the trials table, the pick, best-so-far.
Nothing is imported here: importing one module loads only what it needs.
"""
