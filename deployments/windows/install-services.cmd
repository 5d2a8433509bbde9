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

nssm install qs-promoter-worker "%PY%\prefect.exe" worker start --pool qs-promoter --type process
nssm set qs-promoter-worker AppDirectory "%INSTALL%"
nssm set qs-promoter-worker AppEnvironmentExtra PYTHONIOENCODING=UTF-8 PREFECT_API_URL=http://127.0.0.1:4200/api PREFECT_WORKER_QUERY_SECONDS=2 PREFECT_FLOWS_HEARTBEAT_FREQUENCY=60 QSP_CONFIG=%CONFIG% QSP_HOME=%INSTALL%
nssm set qs-promoter-worker DependOnService qs-promoter-server
nssm set qs-promoter-worker AppStdout "%INSTALL%\var\log\worker.log"
nssm set qs-promoter-worker AppStderr "%INSTALL%\var\log\worker.log"

nssm install qs-promoter-webhook "%PY%\qs-promoter.exe" webhook serve
nssm set qs-promoter-webhook AppDirectory "%INSTALL%"
nssm set qs-promoter-webhook AppEnvironmentExtra PYTHONIOENCODING=UTF-8 PREFECT_API_URL=http://127.0.0.1:4200/api QSP_CONFIG=%CONFIG%
nssm set qs-promoter-webhook DependOnService qs-promoter-server
nssm set qs-promoter-webhook AppStdout "%INSTALL%\var\log\webhook.log"
nssm set qs-promoter-webhook AppStderr "%INSTALL%\var\log\webhook.log"

nssm start qs-promoter-server
nssm start qs-promoter-worker
nssm start qs-promoter-webhook
endlocal
