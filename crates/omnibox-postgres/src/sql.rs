//! SQL text for one event table, built once from validated names.

use std::sync::Arc;

use omnibox_core::model::EventKind;

use crate::config::{CompletionMode, TableNames, Tables};
use crate::row::{COMMON, column_list};

/// The lease-expired message, as [`omnibox_core::domain::lease_expired_error`] writes it.
const LEASE_EXPIRED: &str =
    "left('lease expired: worker `' || t.locked_by || '` did not finish in time', 2000)";

/// Settings of a claim's transaction that commits right after the claim, taken in the
/// claim's first statement (no round trip of their own when the claim gate is taken).
///
/// `plan_cache_mode = force_generic_plan`: the claim runs its cached generic plan instead
/// of planning the statement again on every call, which PostgreSQL otherwise keeps doing
/// for this statement (1.3 to 3.4 ms of planning per claim against 5 to 9 ms of execution,
/// at 100 events a claim). The claim is written so that its generic plan is the custom
/// one, even when cached while the table was empty: pinned by
/// `claim_on_a_never_analyzed_table_reads_far_fewer_rows_than_the_backlog`.
const CLAIM_SETTINGS: &str = "set_config('plan_cache_mode', 'force_generic_plan', true)";

/// Added to [`CLAIM_SETTINGS`] with
/// [`PgStoreConfig::asynchronous_claims`](crate::PgStoreConfig::asynchronous_claims): the
/// claim's commit returns before its WAL reaches the disk. The settle that follows commits
/// durably, and its flush also covers the claim's commit.
const ASYNC_COMMIT: &str = "set_config('synchronous_commit', 'off', true)";

/// Every statement a store runs, by purpose.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub insert: Arc<str>,
    pub insert_guarded: Arc<str>,
    pub insert_leased: Arc<str>,
    pub insert_guarded_leased: Arc<str>,
    pub advisory_lock: Arc<str>,
    pub lookup_by_key: Arc<str>,
    pub lookup_by_id: Arc<str>,
    pub claim: Arc<str>,
    pub claim_gate_try: Arc<str>,
    pub claim_gate: Arc<str>,
    pub claim_settings: Arc<str>,
    pub fetch_pending: Arc<str>,
    pub try_lock: Arc<str>,
    pub get: Arc<str>,
    pub settle: Arc<str>,
    pub settle_complete: Arc<str>,
    pub fail_undecodable: Arc<str>,
    pub refresh: Arc<str>,
    pub release_stale: Arc<str>,
    pub delete_completed: Arc<str>,
    pub backlog: Arc<str>,
    pub find_message: Arc<str>,
    pub sibling: Arc<str>,
    pub dead_letter: Arc<str>,
}

fn arc(s: String) -> Arc<str> {
    Arc::from(s)
}

/// `INSERT INTO dead letters … SELECT … FROM <src> s WHERE s.status = 'failed'`.
pub(crate) fn dead_letter_from(t: &TableNames, kind: EventKind, route: &str, src: &str) -> String {
    let message_id = match kind {
        EventKind::Inbox => "s.message_id",
        EventKind::Outbox => "NULL",
    };
    format!(
        "INSERT INTO {dl} (id, event_id, kind, event_type, route, message_id, body, headers, error, attempts) \
         SELECT gen_random_uuid(), s.id, '{kind}', s.event_type, s.{route}, {message_id}, s.payload::text, s.headers, \
         COALESCE(s.last_error, 'unknown error'), s.attempts_made FROM {src} s WHERE s.status = 'failed'",
        dl = t.dead_letters,
        kind = kind.as_str(),
    )
}

/// Longest wait for the claim gate; a claim goes ahead without it after this.
pub(crate) const CLAIM_GATE_WAIT_MS: u32 = 250;

/// A stable 64-bit key for the claim gate of `table` (FNV-1a; the same in every process).
fn gate_key(table: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "omnibox.claim:".bytes().chain(table.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// SET list for taking a lease, counting an attempt when an expired lease is taken over.
fn takeover_set(worker: &str) -> String {
    let spent = "(t.locked_at IS NOT NULL AND t.attempts_made + 1 >= t.max_attempts)";
    format!(
        "attempts_made = t.attempts_made + CASE WHEN t.locked_at IS NOT NULL THEN 1 ELSE 0 END, \
         last_error = CASE WHEN t.locked_at IS NOT NULL THEN {LEASE_EXPIRED} ELSE t.last_error END, \
         status = CASE WHEN {spent} THEN 'failed' ELSE 'pending' END, \
         locked_at = CASE WHEN {spent} THEN NULL ELSE now() END, \
         locked_by = CASE WHEN {spent} THEN NULL ELSE {worker} END, \
         updated_at = timezone('UTC', now())"
    )
}

impl Statements {
    pub(crate) fn build(
        tables: &Tables,
        t: &TableNames,
        kind: EventKind,
        extra: &[(&str, &str)],
        route: &str,
        completion: CompletionMode,
        asynchronous_claims: bool,
    ) -> Self {
        let q = &t.qualified;
        let claim_settings = if asynchronous_claims {
            format!("{CLAIM_SETTINGS}, {ASYNC_COMMIT}")
        } else {
            CLAIM_SETTINGS.to_owned()
        };
        // The event columns, in decode order (no `updated_at`, which no event carries).
        let t_cols = column_list(extra, "t");
        let r_cols = column_list(extra, "r");
        let cols: Vec<(&str, &str)> = COMMON.iter().chain(extra.iter()).copied().collect();
        let names = cols.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        let unnest = cols
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!("${}::{ty}", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        // `leased`: new rows are leased by this statement to the worker bound after the
        // row arrays, `locked_at` from the database clock as every lease.
        let worker_param = cols.len() + 1;
        let select = |leased: bool| {
            cols.iter()
                .map(|(n, _)| match *n {
                    "payload" | "headers" => format!("i.{n}::jsonb"),
                    "locked_at" if leased => "now()".to_owned(),
                    "locked_by" if leased => format!("${worker_param}::text"),
                    _ => format!("i.{n}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let notify = match &tables.notify {
            Some(ch) => format!(
                ", n AS (SELECT pg_notify('{}', '') AS sent) SELECT ins.* FROM ins LEFT JOIN n ON true",
                ch.as_str()
            ),
            None => " SELECT * FROM ins".to_owned(),
        };
        let dedup_match = match kind {
            EventKind::Outbox => "e.idempotency_key = i.idempotency_key",
            EventKind::Inbox => {
                "e.message_id = i.message_id AND e.consumer_group = i.consumer_group"
            }
        };
        let insert_with = |guard: &str, leased: bool| {
            arc(format!(
                "WITH i AS (SELECT * FROM UNNEST({unnest}) WITH ORDINALITY AS i({names}, ord)), \
                 ins AS (INSERT INTO {q} AS t ({names}, updated_at) SELECT {select}, timezone('UTC', now()) FROM i {guard} ORDER BY i.ord \
                 ON CONFLICT DO NOTHING RETURNING t.*){notify}",
                select = select(leased)
            ))
        };
        let guard = format!("WHERE NOT EXISTS (SELECT 1 FROM {q} e WHERE {dedup_match})");
        let insert = insert_with("", false);
        let insert_guarded = insert_with(&guard, false);
        let insert_leased = insert_with("", true);
        let insert_guarded_leased = insert_with(&guard, true);
        // Same keys as the reference, so a Python writer and a Rust writer exclude each other.
        let advisory_lock = arc(match kind {
            EventKind::Outbox => "SELECT count(pg_advisory_xact_lock(hashtext($1), hashtext(k))) AS locked, current_setting('transaction_isolation') AS isolation FROM (SELECT DISTINCT k FROM unnest($2::text[]) AS u(k) ORDER BY k) AS s".to_owned(),
            EventKind::Inbox => "SELECT count(pg_advisory_xact_lock(hashtext(m), hashtext(g))) AS locked, current_setting('transaction_isolation') AS isolation FROM (SELECT DISTINCT m, g FROM unnest($1::text[], $2::text[]) AS u(m, g) ORDER BY m, g) AS s".to_owned(),
        });
        let lookup_by_key = arc(match kind {
            EventKind::Outbox => format!(
                "SELECT DISTINCT ON (idempotency_key) * FROM {q} WHERE idempotency_key = ANY($1::text[]) ORDER BY idempotency_key, created_at, id"
            ),
            EventKind::Inbox => format!(
                "SELECT DISTINCT ON (message_id, consumer_group) * FROM {q} WHERE (message_id, consumer_group) IN \
                 (SELECT * FROM unnest($1::text[], $2::text[])) ORDER BY message_id, consumer_group, created_at, id"
            ),
        });
        let lookup_by_id = arc(format!("SELECT * FROM {q} WHERE id = ANY($1::uuid[])"));

        // Filters: $4.. arrays; an empty array means no restriction.
        let filters_at = |b: usize| match kind {
            EventKind::Outbox => format!(
                "AND (cardinality(${b}::text[]) = 0 OR r.topic = ANY(${b}::text[])) \
                 AND (cardinality(${b1}::text[]) = 0 OR r.aggregate_type = ANY(${b1}::text[])) \
                 AND (cardinality(${b2}::text[]) = 0 OR r.event_type = ANY(${b2}::text[]))",
                b1 = b + 1,
                b2 = b + 2
            ),
            EventKind::Inbox => format!(
                "AND (cardinality(${b}::text[]) = 0 OR r.source = ANY(${b}::text[])) \
                 AND (cardinality(${b1}::text[]) = 0 OR r.event_type = ANY(${b1}::text[]))",
                b1 = b + 1
            ),
        };
        let filters = filters_at(4);
        // Per-key ordering (outbox): only the head of each (topic, partition_key) line.
        // `OFFSET 0` keeps the check a per-candidate index probe (a correlated subplan):
        // as an anti join, a custom plan may hash the whole pending backlog on every claim
        // (O(backlog) per claim) instead of walking the schedule index and stopping at
        // the limit.
        let order_guard = match kind {
            EventKind::Outbox => format!(
                "AND NOT EXISTS (SELECT 1 FROM {q} e WHERE e.topic = r.topic AND e.partition_key = r.partition_key \
                 AND e.status = 'pending' AND (e.created_at, e.id) < (r.created_at, r.id) \
                 AND (e.scheduled_at <= now() OR e.last_error IS NOT NULL OR e.locked_at IS NOT NULL) OFFSET 0)"
            ),
            EventKind::Inbox => String::new(),
        };
        // A key with an event in flight (leased) has nothing claimable: a hashed set of
        // the leased keys (at most the events in flight) turns the probe above into a
        // hash lookup for those rows. Without it a claimer competing with one that holds
        // every head (few keys, large batches) probes the whole pending backlog on every
        // claim, and more workers drain slower. The order guard still decides; this set
        // only answers early (it also holds back an event that fell due while a later one
        // of its key is in flight — a delayed event the order line skipped — until that
        // one settles). The `locked_at` range and `COLLATE "C"` keep it on the `locked_at`
        // index in a plan made without statistics (a never-analysed table), where
        // `IS NOT NULL` alone is estimated to match nearly every row: a sequential scan.
        let busy_guard = match kind {
            EventKind::Outbox => format!(
                "AND (r.topic, r.partition_key) NOT IN (SELECT b.topic, b.partition_key FROM {q} b \
                 WHERE b.locked_at > '-infinity' AND b.locked_at < 'infinity' AND b.status = 'pending' COLLATE \"C\") "
            ),
            EventKind::Inbox => String::new(),
        };
        let ttl = "($3::bigint * interval '1 microsecond')";
        // Expired leases are found through the `locked_at` index. Their status test is
        // spelled `COLLATE "C"` (the same equality) so it does not match the predicate of
        // the `status = 'pending'` partial indexes: without statistics (a table never
        // analyzed) the planner otherwise ANDs in a bitmap of the whole pending backlog.
        // The lease test is a closed range (`> '-infinity'`, the same rows as `IS NOT
        // NULL`), which a plan without statistics estimates as selective: a generic plan
        // made while the table was empty otherwise scans it, and is kept as it fills.
        let dl_upd = dead_letter_from(t, kind, route, "upd");
        let claim = arc(format!(
            "WITH fresh AS (SELECT r.id, r.created_at, r.scheduled_at FROM {q} r \
               WHERE r.status = 'pending' AND r.locked_at IS NULL AND r.attempts_made < r.max_attempts \
               AND r.scheduled_at <= now() {filters} {busy_guard}{order_guard} \
               ORDER BY r.scheduled_at, r.created_at, r.id LIMIT $2 FOR UPDATE SKIP LOCKED), \
             expired AS (SELECT r.id, r.created_at, r.scheduled_at FROM {q} r \
               WHERE r.locked_at > '-infinity' AND r.locked_at < now() - {ttl} AND r.status = 'pending' COLLATE \"C\" \
               AND r.attempts_made < r.max_attempts AND r.scheduled_at <= now() {filters} {order_guard} \
               ORDER BY r.scheduled_at, r.created_at, r.id LIMIT $2 FOR UPDATE SKIP LOCKED), \
             cand AS (SELECT * FROM fresh UNION ALL SELECT * FROM expired ORDER BY scheduled_at, created_at, id LIMIT $2), \
             upd AS (UPDATE {q} AS t SET {set} FROM cand c WHERE t.id = c.id AND t.created_at = c.created_at RETURNING {t_cols}), \
             dl AS ({dl_upd}) \
             SELECT {plain} FROM upd WHERE status = 'pending' ORDER BY scheduled_at, created_at, id",
            set = takeover_set("$1"),
            plain = column_list(extra, ""),
        ));
        // One exclusive claim at a time per table, held to the claim's commit: the next
        // claim's snapshot then sees the leases the last one wrote, and the leased-key set
        // answers for them. Without it, concurrent claims cannot see each other's
        // uncommitted leases, each probes the order line of the whole backlog, and the
        // longer they run the more they overlap (4 workers on 1k keys drained 4x slower
        // than 1). The wait is bounded (`lock_timeout` inside the block, restored after),
        // so a claimer stopped while holding it delays the others by that much only. The
        // store takes it only while its claims come back short of their limit (fewer
        // claimable heads than a batch); full batches claim side by side.
        // Uncontended, one prepared statement takes it; the block waits only when it is held.
        // The same statement takes the claim's settings (`CLAIM_SETTINGS`).
        let claim_gate_try = arc(format!(
            "SELECT pg_try_advisory_xact_lock({key}), {claim_settings}",
            key = gate_key(q)
        ));
        let claim_gate = arc(format!(
            "DO $$DECLARE old text := current_setting('lock_timeout'); BEGIN \
             PERFORM set_config('lock_timeout', '{CLAIM_GATE_WAIT_MS}ms', true); \
             BEGIN PERFORM pg_advisory_xact_lock({key}); EXCEPTION WHEN lock_not_available THEN NULL; END; \
             PERFORM set_config('lock_timeout', old, true); END$$",
            key = gate_key(q)
        ));
        let fetch_pending = arc(format!(
            "SELECT {r_cols} FROM {q} r WHERE r.status = 'pending' AND r.locked_at IS NULL AND r.attempts_made < r.max_attempts \
             AND r.scheduled_at <= now() {f} {busy_guard}{order_guard} \
             ORDER BY r.scheduled_at, r.created_at, r.id LIMIT $1",
            f = filters_at(2)
        ));
        let try_lock = arc(format!(
            "WITH upd AS (UPDATE {q} AS t SET {set} WHERE t.id = $4 AND t.status = 'pending' \
               AND t.attempts_made < t.max_attempts AND (t.locked_at IS NULL OR t.locked_at < now() - {ttl}) \
               AND ($2::bool OR t.scheduled_at <= now()) RETURNING t.*), \
             dl AS ({dl_upd}) SELECT * FROM upd",
            set = takeover_set("$1"),
        ));
        let get = arc(format!(
            "SELECT *, now() AS db_now FROM {q} WHERE id = $1 ORDER BY created_at LIMIT 1"
        ));

        let fence =
            "t.id = v.id AND t.status = 'pending' AND t.locked_by = $7 AND t.locked_at = v.lease";
        let fence_c =
            "t.id = v.id AND t.status = 'pending' AND t.locked_by = $3 AND t.locked_at = v.lease";
        let delete_mode = completion == CompletionMode::Delete && kind == EventKind::Outbox;
        // What the dead-letter insert reads from `upd`.
        let dl_cols = match kind {
            EventKind::Outbox => format!(
                "t.id, t.status, t.event_type, t.{route}, t.payload, t.headers, t.last_error, t.attempts_made"
            ),
            EventKind::Inbox => format!(
                "t.id, t.status, t.event_type, t.{route}, t.message_id, t.payload, t.headers, t.last_error, t.attempts_made"
            ),
        };
        let (upd_guard, del_cte, del_union) = if delete_mode {
            (
                " AND v.action <> 'c'",
                format!(
                    "del AS (DELETE FROM {q} AS t USING v WHERE {fence} AND v.action = 'c' RETURNING t.id, 'c'::text AS action, 'deleted'::text AS status), "
                ),
                " UNION ALL SELECT id, action, status FROM del",
            )
        } else {
            ("", String::new(), "")
        };
        let settle = arc(format!(
            "WITH v AS (SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::bool[], $6::timestamptz[]) \
               AS v(id, lease, action, error, counted, retry_at)), \
             upd AS (UPDATE {q} AS t SET \
               status = CASE WHEN v.action = 'c' THEN 'completed' \
                 WHEN v.action = 'f' AND v.counted AND t.attempts_made + 1 >= t.max_attempts THEN 'failed' ELSE 'pending' END, \
               completed_at = CASE WHEN v.action = 'c' THEN GREATEST(now(), t.created_at, t.scheduled_at) ELSE NULL END, \
               attempts_made = t.attempts_made + CASE WHEN v.action = 'f' AND v.counted THEN 1 ELSE 0 END, \
               last_error = CASE WHEN v.action = 'f' THEN v.error ELSE t.last_error END, \
               scheduled_at = CASE WHEN v.action = 'f' AND v.retry_at IS NOT NULL \
                 THEN LEAST(GREATEST(v.retry_at, t.created_at), t.created_at + $8::bigint * interval '1 microsecond') \
                 ELSE t.scheduled_at END, \
               locked_at = NULL, locked_by = NULL, updated_at = timezone('UTC', now()) \
               FROM v WHERE {fence}{upd_guard} RETURNING {dl_cols}, v.action AS action), \
             {del_cte}\
             dl AS ({dl_upd}) \
             SELECT id, action, status::text AS status FROM upd{del_union}"
        ));
        // Every settlement completes (the relay's usual batch): the same row changes as
        // `settle` makes for action 'c' (attempts, last_error and scheduled_at keep their
        // values; a completed row is never dead-lettered), without the unused arrays.
        let settle_complete = arc(if delete_mode {
            format!(
                "DELETE FROM {q} AS t USING UNNEST($1::uuid[], $2::timestamptz[]) AS v(id, lease) \
                 WHERE {fence_c} RETURNING t.id"
            )
        } else {
            format!(
                "UPDATE {q} AS t SET status = 'completed', \
                   completed_at = GREATEST(now(), t.created_at, t.scheduled_at), \
                   locked_at = NULL, locked_by = NULL, updated_at = timezone('UTC', now()) \
                 FROM UNNEST($1::uuid[], $2::timestamptz[]) AS v(id, lease) \
                 WHERE {fence_c} RETURNING t.id"
            )
        });
        // A claimed row that cannot be decoded: failed terminally (its budget spent) and
        // dead-lettered with the decode error, fenced by the lease the claim just wrote.
        let fail_undecodable = arc(format!(
            "WITH v AS (SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[]) AS v(id, lease, error)), \
             upd AS (UPDATE {q} AS t SET status = 'failed', attempts_made = GREATEST(t.attempts_made, t.max_attempts), \
               last_error = v.error, completed_at = NULL, locked_at = NULL, locked_by = NULL, \
               updated_at = timezone('UTC', now()) \
               FROM v WHERE t.id = v.id AND t.status = 'pending' \
               AND CASE WHEN v.lease IS NULL THEN t.locked_at IS NULL \
                 ELSE t.locked_by = $4 AND t.locked_at = v.lease END RETURNING {dl_cols}), \
             dl AS ({dl_upd}) \
             SELECT id FROM upd"
        ));
        let refresh = arc(format!(
            "UPDATE {q} AS t SET locked_at = now(), updated_at = timezone('UTC', now()) \
             FROM UNNEST($1::uuid[], $2::timestamptz[]) AS v(id, lease) \
             WHERE t.id = v.id AND t.status = 'pending' AND t.locked_by = $3 AND t.locked_at = v.lease \
             RETURNING t.id, t.locked_at"
        ));
        let spent = "t.attempts_made + 1 >= t.max_attempts";
        let release_stale = arc(format!(
            "WITH s AS (SELECT r.id, r.created_at FROM {q} r WHERE r.locked_at IS NOT NULL \
               AND r.locked_at < now() - ($1::bigint * interval '1 microsecond') AND r.status = 'pending' \
               ORDER BY r.locked_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
             upd AS (UPDATE {q} AS t SET attempts_made = LEAST(t.attempts_made + 1, t.max_attempts), \
               last_error = {LEASE_EXPIRED}, status = CASE WHEN {spent} THEN 'failed' ELSE 'pending' END, \
               locked_at = NULL, locked_by = NULL, updated_at = timezone('UTC', now()) \
               FROM s WHERE t.id = s.id AND t.created_at = s.created_at RETURNING t.*), \
             dl AS ({dl_upd}) \
             SELECT count(*) FILTER (WHERE status = 'pending') AS released, \
                    count(*) FILTER (WHERE status = 'failed') AS failed FROM upd"
        ));
        let delete_completed = arc(format!(
            "WITH d AS (SELECT r.id, r.created_at FROM {q} r WHERE r.status = 'completed' AND r.completed_at IS NOT NULL \
               AND r.completed_at < now() - ($1::bigint * interval '1 microsecond') \
               ORDER BY r.completed_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             DELETE FROM {q} AS t USING d WHERE t.id = d.id AND t.created_at = d.created_at"
        ));
        let age = |expr: &str| format!("(extract(epoch FROM now() - ({expr})) * 1000000)::bigint");
        let backlog = arc(format!(
            "SELECT (SELECT count(*) FROM {q} WHERE status = 'pending') AS pending, \
               {claimable} AS claimable_age_us, \
               {oldest} AS pending_age_us, \
               (SELECT count(*) FROM {q} WHERE locked_at IS NOT NULL) AS leased, \
               (SELECT count(*) FROM {q} WHERE status = 'failed') AS failed, \
               (SELECT count(*) FROM {dl}) AS dead_letters",
            claimable = age(&format!(
                "SELECT min(scheduled_at) FROM {q} WHERE status = 'pending' AND locked_at IS NULL \
                 AND attempts_made < max_attempts AND scheduled_at <= now()"
            )),
            oldest = age(&format!(
                "SELECT min(created_at) FROM {q} WHERE status = 'pending'"
            )),
            dl = t.dead_letters,
        ));
        let find_message = arc(format!(
            "SELECT * FROM {q} WHERE message_id = $1 AND consumer_group = $2 ORDER BY created_at DESC, id DESC LIMIT 1"
        ));
        let sibling = arc(format!(
            "SELECT id FROM {q} WHERE message_id = $1 AND consumer_group = $2 AND status = 'completed' AND id <> $3 LIMIT 1"
        ));
        let dead_letter = arc(format!(
            "INSERT INTO {} (id, event_id, kind, event_type, route, message_id, body, headers, error, attempts, created_at, body_bytes, headers_text) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING",
            t.dead_letters
        ));
        Self {
            insert,
            insert_guarded,
            insert_leased,
            insert_guarded_leased,
            advisory_lock,
            lookup_by_key,
            lookup_by_id,
            claim,
            claim_gate_try,
            claim_gate,
            claim_settings: arc(format!("SELECT {claim_settings}")),
            fetch_pending,
            try_lock,
            get,
            settle,
            settle_complete,
            fail_undecodable,
            refresh,
            release_stale,
            delete_completed,
            backlog,
            find_message,
            sibling,
            dead_letter,
        }
    }
}
