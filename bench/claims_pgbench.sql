-- claim + complete, as cosmos_models does it, for pgbench -M prepared (bench/bench_claims.py).
UPDATE runs SET status = 'running', worker_id = 'pgbench', started_at = now(), heartbeat_at = now(), updated_at = now()
 WHERE id = ANY(ARRAY(SELECT id FROM runs WHERE status = 'pending' ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED))
   AND status = 'pending'
 RETURNING id AS claimed \gset
UPDATE runs SET status = 'completed', completed_at = now(), updated_at = now() WHERE id = :claimed AND status = 'running';
