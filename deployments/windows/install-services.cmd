@echo off
rem Registers the qs-promoter services with NSSM. Run from an elevated prompt in the install folder.
rem Adjust INSTALL and CONFIG; nssm.exe must be on PATH.
setlocal
set INSTALL=C:\qs-promoter
set CONFIG=C:\qs-promoter\qs-promoter.toml
set PY=%INSTALL%\.venv\Scripts

nssm install qs-promoter-server "%PY%\prefect.exe" server start --host 127.0.0.1 --port 4200
nssm set qs-promoter-server AppDirectory "%INSTALL%"
nssm set qs-promoter-server AppEnvironmentExtra PYTHONIOENCODING=UTF-8 PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED=events,flow_runs PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD=2592000 PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem
nssm set qs-promoter-server AppStdout "%INSTALL%\var\log\server.log"
nssm set qs-promoter-server AppStderr "%INSTALL%\var\log\server.log"

rem The executor runs every promotion in its own process. Ctrl-C (NSSM's first stop method) drains
rem it: no new runs, running ones get 30 s, the rest are cancelled; 45 s covers that before NSSM
rem goes further. It exits with code 75 for its planned restart: NSSM's default exit action restarts it.
nssm install qs-promoter-executor "%PY%\qs-promoter.exe" executor
nssm set qs-promoter-executor AppDirectory "%INSTALL%"
nssm set qs-promoter-executor AppEnvironmentExtra PYTHONIOENCODING=UTF-8 PREFECT_API_URL=http://127.0.0.1:4200/api PREFECT_FLOWS_HEARTBEAT_FREQUENCY=60 QSP_CONFIG=%CONFIG% QSP_HOME=%INSTALL%
nssm set qs-promoter-executor AppStopMethodConsole 45000
nssm set qs-promoter-executor AppExit Default Restart
nssm set qs-promoter-executor DependOnService qs-promoter-server
nssm set qs-promoter-executor AppStdout "%INSTALL%\var\log\executor.log"
nssm set qs-promoter-executor AppStderr "%INSTALL%\var\log\executor.log"

rem The alternative, on the same pool: Prefect's process worker (a Python process per flow run).
rem Install it instead of the executor, never beside it on the same machine:
rem nssm install qs-promoter-worker "%PY%\prefect.exe" worker start --pool qs-promoter --type process
rem nssm set qs-promoter-worker AppDirectory "%INSTALL%"
rem nssm set qs-promoter-worker AppEnvironmentExtra PYTHONIOENCODING=UTF-8 PREFECT_API_URL=http://127.0.0.1:4200/api PREFECT_WORKER_QUERY_SECONDS=2 PREFECT_FLOWS_HEARTBEAT_FREQUENCY=60 QSP_CONFIG=%CONFIG% QSP_HOME=%INSTALL%
rem nssm set qs-promoter-worker DependOnService qs-promoter-server
rem nssm set qs-promoter-worker AppStdout "%INSTALL%\var\log\worker.log"
rem nssm set qs-promoter-worker AppStderr "%INSTALL%\var\log\worker.log"

nssm install qs-promoter-webhook "%PY%\qs-promoter.exe" webhook serve
nssm set qs-promoter-webhook AppDirectory "%INSTALL%"
nssm set qs-promoter-webhook AppEnvironmentExtra PYTHONIOENCODING=UTF-8 PREFECT_API_URL=http://127.0.0.1:4200/api QSP_CONFIG=%CONFIG%
nssm set qs-promoter-webhook DependOnService qs-promoter-server
nssm set qs-promoter-webhook AppStdout "%INSTALL%\var\log\webhook.log"
nssm set qs-promoter-webhook AppStderr "%INSTALL%\var\log\webhook.log"

nssm start qs-promoter-server
nssm start qs-promoter-executor
nssm start qs-promoter-webhook
endlocal
