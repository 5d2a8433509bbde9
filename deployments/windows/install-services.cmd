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

if not exist "%INSTALL%\var\log" mkdir "%INSTALL%\var\log"

rem The webhook secret (part of the callback URL QRS calls): kept if the settings file or
rem QSP_WEBHOOK__SECRET has one, else generated here. It is never shown: it goes to the two services
rem that need it and to the machine variable QSP_WEBHOOK__SECRET (for doctor and the other commands
rem in a new prompt). To keep it in the settings file instead: [webhook] secret = "...".
set QSP_CONFIG=%CONFIG%
"%PY%\python.exe" -c "import sys; from promoter.settings import load_settings; sys.exit(0 if load_settings().webhook.secret.get_secret_value() else 3)" >nul 2>&1
if errorlevel 3 goto new_secret
if errorlevel 1 goto bad_settings
echo webhook secret: set already (not changed)
goto secret_done
:bad_settings
echo The settings file %CONFIG% cannot be read: run "%PY%\qs-promoter.exe" doctor --config "%CONFIG%"
exit /b 1
:new_secret
for /f "usebackq delims=" %%s in (`"%PY%\python.exe" -c "import secrets; print(secrets.token_urlsafe(32))"`) do set "QSP_WEBHOOK__SECRET=%%s"
setx QSP_WEBHOOK__SECRET "%QSP_WEBHOOK__SECRET%" /M >nul
nssm set qs-promoter-executor AppEnvironmentExtra +QSP_WEBHOOK__SECRET=%QSP_WEBHOOK__SECRET% >nul
nssm set qs-promoter-webhook AppEnvironmentExtra +QSP_WEBHOOK__SECRET=%QSP_WEBHOOK__SECRET% >nul
echo webhook secret: generated and stored for the services and as QSP_WEBHOOK__SECRET (not shown)
:secret_done

nssm start qs-promoter-server

rem Register the work pool, the deployments and the automation with the server (run this file, or
rem just these lines, again after an upgrade). The server needs a few seconds to start: retried for 2 min.
set PREFECT_API_URL=http://127.0.0.1:4200/api
set TRIES=0
:register
"%PY%\qs-promoter.exe" up --register-only --config "%CONFIG%" >> "%INSTALL%\var\log\register.log" 2>&1
if not errorlevel 1 goto registered
set /a TRIES+=1
if %TRIES% geq 24 goto register_failed
timeout /t 5 /nobreak >nul
goto register
:register_failed
echo Registration failed; see %INSTALL%\var\log\register.log, then run: "%PY%\qs-promoter.exe" up --register-only --config "%CONFIG%"
exit /b 1
:registered
echo deployments registered

nssm start qs-promoter-executor
nssm start qs-promoter-webhook
echo Next: "%PY%\qs-promoter.exe" doctor --config "%CONFIG%" (in a new prompt)
endlocal
