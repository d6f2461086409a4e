-- The SQL statements the Restate web UI sent to POST /query while its pages were loaded
-- (recorded traffic, one statement per block; <TS> stands for a timestamp, inv_<ID> for an
-- invocation id). tests/cluster/web_ui.rs runs each against our node.

SELECT 1 FROM sys_invocation_status LIMIT 1;

SELECT
        ss.target_service_name AS service_name,
        CASE
          WHEN ss.status = 'inboxed' THEN 'pending'
          WHEN ss.status = 'invoked' AND sis.in_flight IS TRUE THEN 'running'
          WHEN ss.status = 'invoked' AND sis.retry_count > 0 THEN 'backing-off'
          WHEN ss.status = 'invoked' THEN 'ready'
          WHEN ss.status = 'completed' AND ss.completion_result = 'success' THEN 'succeeded'
          WHEN ss.status = 'completed' THEN 'failed'
          ELSE ss.status
        END AS bucket,
        COUNT(1) AS count
      FROM sys_invocation_status ss
      LEFT JOIN sys_invocation_state sis ON sis.id = ss.id
      WHERE ss.created_at > '<TS>'
      GROUP BY
        ss.target_service_name,
        CASE
          WHEN ss.status = 'inboxed' THEN 'pending'
          WHEN ss.status = 'invoked' AND sis.in_flight IS TRUE THEN 'running'
          WHEN ss.status = 'invoked' AND sis.retry_count > 0 THEN 'backing-off'
          WHEN ss.status = 'invoked' THEN 'ready'
          WHEN ss.status = 'completed' AND ss.completion_result = 'success' THEN 'succeeded'
          WHEN ss.status = 'completed' THEN 'failed'
          ELSE ss.status
        END;

SELECT
        sampled_invocations.target_service_name AS service_name,
        CASE
          WHEN sampled_invocations.status = 'inboxed' THEN 'pending'
          WHEN sampled_invocations.status = 'invoked' AND sis.in_flight IS TRUE THEN 'running'
          WHEN sampled_invocations.status = 'invoked' AND sis.retry_count > 0 THEN 'backing-off'
          WHEN sampled_invocations.status = 'invoked' THEN 'ready'
          WHEN sampled_invocations.status = 'completed' AND sampled_invocations.completion_result = 'success' THEN 'succeeded'
          WHEN sampled_invocations.status = 'completed' THEN 'failed'
          ELSE sampled_invocations.status
        END AS bucket,
        COUNT(1) AS count
      FROM (
        SELECT
          id, target_service_name, status, completion_result
        FROM sys_invocation_status
        LIMIT 1000000
      ) sampled_invocations
      LEFT JOIN sys_invocation_state sis ON sis.id = sampled_invocations.id
      GROUP BY
        sampled_invocations.target_service_name,
        CASE
          WHEN sampled_invocations.status = 'inboxed' THEN 'pending'
          WHEN sampled_invocations.status = 'invoked' AND sis.in_flight IS TRUE THEN 'running'
          WHEN sampled_invocations.status = 'invoked' AND sis.retry_count > 0 THEN 'backing-off'
          WHEN sampled_invocations.status = 'invoked' THEN 'ready'
          WHEN sampled_invocations.status = 'completed' AND sampled_invocations.completion_result = 'success' THEN 'succeeded'
          WHEN sampled_invocations.status = 'completed' THEN 'failed'
          ELSE sampled_invocations.status
        END;

SELECT id
      FROM sys_invocation_state
      WHERE in_flight IS TRUE
      LIMIT 250;

SELECT after_journal_entry_index, appended_at, event_type, event_json from sys_journal_events WHERE id = 'inv_<ID>' ORDER BY appended_at;

SELECT id, target, target_service_name, target_service_key, target_handler_name, target_service_ty, idempotency_key, invoked_by, invoked_by_id, invoked_by_subscription_id, invoked_by_target, restarted_from, pinned_deployment_id, pinned_service_protocol_version, journal_size, journal_commands_size, created_at, modified_at, inboxed_at, scheduled_at, scheduled_start_at, running_at, completed_at, completion_retention, journal_retention, retry_count, last_start_at, next_retry_at, last_attempt_deployment_id, last_attempt_server, last_failure, last_failure_error_code, status, completion_result, completion_failure, invoked_by_service_name, trace_id, created_using_restate_version, last_failure_related_entry_index, last_failure_related_entry_name, last_failure_related_entry_type, last_failure_related_command_index, last_failure_related_command_name, last_failure_related_command_type FROM sys_invocation WHERE id = 'inv_<ID>';

SELECT id, index, appended_at, entry_type, name, raw_length, entry_lite_json,  version, completed, sleep_wakeup_at, invoked_id, invoked_target, promise_name FROM sys_journal WHERE id = 'inv_<ID>' ORDER BY index;

SELECT entry_type, entry_json, raw FROM sys_journal WHERE id = 'inv_<ID>' AND index = 1;

SELECT DISTINCT service_key
    FROM state WHERE "service_name" = 'counter'
    LIMIT 301;

SELECT service_key, key, value_length, value
    FROM state
    WHERE service_name = 'counter'
      AND service_key IN ('a', 'b', 'c')
      AND value_length <= 2048
    LIMIT 1500;

SELECT DISTINCT
      target_service_key AS object_key
    FROM sys_invocation_status
    WHERE target_service_name = 'counter'
      AND target_service_ty = 'virtual_object'
      AND target_service_key IS NOT NULL
      AND status <> 'completed'
    LIMIT 51;
