"""Registry schema as numbered migrations (PRAGMA user_version), applied under one write lock."""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: sweeps, runs and everything runs produce
    """
    CREATE TABLE sweeps (
        id TEXT PRIMARY KEY,
        name TEXT,
        user TEXT,
        created REAL,
        argv TEXT,             -- JSON list
        cwd TEXT,
        sweep_dir TEXT,
        backend TEXT,
        git_commit TEXT,
        git_dirty INTEGER,
        git_diff TEXT,
        launcher TEXT          -- JSON: the launcher config
    );
    CREATE TABLE runs (
        run INTEGER PRIMARY KEY,          -- compact key for the big tables
        id TEXT UNIQUE NOT NULL,          -- <sweep id>-<job num>
        sweep_id TEXT REFERENCES sweeps(id),
        job_num INTEGER,
        overrides TEXT,                   -- JSON list
        config TEXT,                      -- JSON: resolved task config, secrets masked
        run_dir TEXT,
        spool_path TEXT,
        log_path TEXT,
        slurm_job_id TEXT,
        state TEXT NOT NULL,
        exit_code INTEGER,
        error TEXT,
        host TEXT,
        created REAL,
        started REAL,
        ended REAL,
        restarts INTEGER DEFAULT 0,
        parent_id TEXT,
        environment TEXT                  -- JSON: host, python, packages, Slurm variables
    );
    CREATE INDEX runs_sweep ON runs(sweep_id, job_num);
    CREATE INDEX runs_state ON runs(state);
    CREATE TABLE run_states (run INTEGER, state TEXT, time REAL, source TEXT);
    CREATE INDEX run_states_run ON run_states(run);
    CREATE TABLE params (
        run INTEGER, key TEXT, value TEXT, num REAL, type TEXT,
        PRIMARY KEY (run, key)
    ) WITHOUT ROWID;
    CREATE INDEX params_key ON params(key, num);
    CREATE TABLE metric_keys (key INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
    CREATE TABLE metrics (run INTEGER, key INTEGER, step INTEGER, value REAL, time REAL);
    CREATE INDEX metrics_run_key_step ON metrics(run, key, step);
    CREATE TABLE metric_summary (
        run INTEGER, key INTEGER, last REAL, last_step INTEGER, min REAL, max REAL, count INTEGER,
        PRIMARY KEY (run, key)
    ) WITHOUT ROWID;
    CREATE INDEX metric_summary_key ON metric_summary(key, last);
    CREATE TABLE system_samples (
        run INTEGER, time REAL, gpu INTEGER, uuid TEXT, util REAL, mem_used REAL, mem_total REAL,
        power REAL, temp REAL
    );
    CREATE INDEX system_samples_run ON system_samples(run, time);
    CREATE TABLE artifacts (run INTEGER, name TEXT, path TEXT, size INTEGER, time REAL);
    CREATE TABLE spool_offsets (run INTEGER PRIMARY KEY, offset INTEGER NOT NULL, updated REAL);
    CREATE TABLE ingest_problems (run INTEGER, offset INTEGER, problem TEXT, time REAL);
    """,
    # 2: the process that runs the task, to tell a dead local run from a live one
    """
    ALTER TABLE runs ADD COLUMN pid INTEGER;
    """,
    # 3: the poller's cache of Slurm's view (one row per job or array task) and its shared schedule
    """
    CREATE TABLE slurm_jobs (
        job_id TEXT PRIMARY KEY, state TEXT, reason TEXT, exit_code INTEGER, signal INTEGER,
        elapsed_s INTEGER, timelimit_s INTEGER, alloc_cpus INTEGER, alloc_gpus INTEGER, req_mem_mb REAL,
        total_cpu_s REAL, max_rss_mb REAL, node_list TEXT, submit REAL, start REAL, "end" REAL,
        restarts INTEGER, source TEXT, updated REAL
    );
    CREATE TABLE poller_schedule (
        call TEXT PRIMARY KEY,      -- 'squeue' or 'sacct'
        last REAL,                  -- when the last call started (any process)
        next_allowed REAL,          -- earliest time of the next call (interval or backoff)
        failures INTEGER DEFAULT 0
    );
    """,
    # 4: which way the sweep's optimizer ranks ('min'/'max', slurmml.core.direction), and each run's numeric return value
    """
    ALTER TABLE sweeps ADD COLUMN direction TEXT;
    ALTER TABLE runs ADD COLUMN result REAL;
    """,
    # 5: the run's own peak resident memory (MB), from its end record: for jobs too short for Slurm's sampling
    """
    ALTER TABLE runs ADD COLUMN max_rss_mb REAL;
    """,
    # 6: which params the run gave `slurmml.log_params` (1), apart from those of its config (0)
    """
    ALTER TABLE params ADD COLUMN logged INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: one run across its executions (a requeue or a resubmission starts the next), and the points a resumed
    # execution superseded (logged after the step it resumed from), kept apart so each step has one value
    """
    CREATE TABLE executions (
        run INTEGER, number INTEGER,   -- 0, then SLURM_RESTART_COUNT or one more than the last
        job_id TEXT, host TEXT,
        started REAL, ended REAL,      -- from the run's own records: start, then requeue or end (else its last record)
        state TEXT,                    -- RUNNING, REQUEUED, or how the run ended (COMPLETED, FAILED, ...)
        reason TEXT,                   -- why it was requeued: TIMEOUT, PREEMPTED, SIGNAL
        checkpoint_step INTEGER,       -- the step saved before the requeue
        resumed_from INTEGER,          -- the step of the checkpoint it continued from
        superseded INTEGER NOT NULL DEFAULT 0,  -- earlier executions' points it superseded
        repeated_steps INTEGER NOT NULL DEFAULT 0,  -- steps trained again: earlier executions' last step - resumed_from
        lost_s REAL NOT NULL DEFAULT 0,  -- seconds spanned by the superseded points: training done twice
        PRIMARY KEY (run, number)
    ) WITHOUT ROWID;
    CREATE TABLE superseded_metrics (run INTEGER, key INTEGER, step INTEGER, value REAL, time REAL, execution INTEGER);
    CREATE INDEX superseded_metrics_run ON superseded_metrics(run, key, step);
    -- the GPU samples of a job's other nodes, one file per node (its own writer), and how far each is read
    CREATE TABLE node_spools (run INTEGER, path TEXT, offset INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run, path));
    """,
    # 8: data: the dataset versions each run used (its inputs), where an artifact's bytes are in the object store,
    # and the runs that came from other machines through it (slurmml sync)
    """
    CREATE TABLE run_inputs (
        run INTEGER, dataset TEXT, version INTEGER,
        digest TEXT,                   -- the version's manifest digest: what the run really read
        time REAL,
        fetched INTEGER,               -- 1 if this run downloaded it, 0 if it found it in a cache
        PRIMARY KEY (run, dataset, version)
    ) WITHOUT ROWID;
    CREATE INDEX run_inputs_dataset ON run_inputs(dataset, version);
    ALTER TABLE artifacts ADD COLUMN digest TEXT;   -- sha256 of the bytes (of the packed folder for a folder)
    ALTER TABLE artifacts ADD COLUMN uri TEXT;      -- s3://... once uploaded
    ALTER TABLE artifacts ADD COLUMN upload TEXT;   -- NULL (not asked), pending, uploaded, or failed: <why>
    CREATE TABLE synced_runs (
        run_id TEXT PRIMARY KEY,
        store TEXT,                    -- the store's URL it came through
        mirror TEXT,                   -- the local copy of its spool, which the ordinary ingest reads
        meta TEXT,                     -- JSON: run.json (host, user, argv, cwd, git, code blob)
        updated REAL
    );
    """,
    # 9: live control of running jobs (slurmml set / snapshot / stop) and the jobs' answers; sweeps' early-stopping
    # rules and the runs they pruned (docs/control.md)
    """
    CREATE TABLE controls (
        id TEXT PRIMARY KEY,
        run INTEGER,
        kind TEXT,                     -- set, snapshot, stop (slurmml.core.controls)
        args TEXT,                     -- JSON: {"values": {...}} for set, {"state", "reason"} for a rule's stop
        user TEXT, source TEXT,        -- who asked, and from where: cli, tui, early_stop
        asked REAL, deadline REAL,     -- a command unanswered past its deadline is shown timed out
        status TEXT NOT NULL,          -- pending, then applied or refused as the job answered
        step INTEGER, answered REAL, message TEXT, checkpoint TEXT
    );
    CREATE INDEX controls_run ON controls(run, asked);
    CREATE TABLE early_stop (
        sweep_id TEXT PRIMARY KEY,
        rule TEXT NOT NULL,            -- JSON: slurmml.core.early_stop.rule_to_dict
        source TEXT, created REAL,     -- launch (the launcher's early_stop field) or prune (slurmml prune)
        problem TEXT                   -- why the rule cannot be applied now, in one line (NULL when it can)
    );
    CREATE TABLE prunings (
        run INTEGER PRIMARY KEY,       -- a run is pruned once: two watchers race for this row, one wins
        sweep_id TEXT, rung INTEGER, step INTEGER, value REAL, threshold REAL, compared INTEGER,
        reason TEXT, decided REAL, control_id TEXT,
        cancelled REAL                 -- when its round's one scancel went out (it had not stopped in time)
    );
    """,
]
