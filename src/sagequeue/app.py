"""Wiring from configuration: the only module that knows the concrete adapters."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from sagequeue.config import ConfigError, Settings, key_policies, load_access_keys
from sagequeue.frontdoor.asgi import FrontDoor
from sagequeue.frontdoor.http import Request, Response
from sagequeue.frontdoor.sigv4 import SigV4Verifier
from sagequeue.ports import WakeupChannel

if TYPE_CHECKING:
    from sagequeue.autoscaling.operations import ApplicationAutoScaling
    from sagequeue.dispatch.worker import Worker
    from sagequeue.frontdoor.control import ControlPlane
    from sagequeue.monitoring.cloudwatch import CloudWatch
    from sagequeue.stores.objects import ObjectBackend
    from sagequeue.stores.postgres import PostgresStore
    from sagequeue.stores.sqlite import SqliteStore

    Store = SqliteStore | PostgresStore

log = logging.getLogger("sagequeue")


class Application:
    """Stores, front door and worker for one ``sagequeue serve`` process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ready = False
        # Opened by start(), which runs before the server takes any request.
        self.store: Store | None = None
        self.objects: ObjectBackend | None = None
        self.worker: Worker | None = None
        self.control: ControlPlane | None = None
        self.cloudwatch: CloudWatch | None = None
        self.autoscaling: ApplicationAutoScaling | None = None
        self.wakeups: WakeupChannel | None = None
        self.change_notices: Any = None  # PostgresChangeNotices on PostgreSQL
        self.keys, self.generated_keys = load_access_keys(settings)
        from sagequeue.domain.metrics import MetricClock
        from sagequeue.monitoring.recorder import MetricsRecorder, new_writer_id

        self.metric_clock = MetricClock(settings.time_scale)
        # The front door's counts (Invocations, 4XX / 5XX errors), written to the store
        # every few seconds.
        self.api_metrics = MetricsRecorder(
            None, new_writer_id("api"), self.metric_clock, instance_counter=self._running
        )

    async def start(self) -> None:
        from sagequeue.frontdoor.control import ControlPlane
        from sagequeue.stores import open_object_store, open_store

        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = store = await open_store(settings.database_url)
        self.objects = objects = await open_object_store(settings)
        self._warn_if_objects_are_local_to_this_host()
        self.wakeups = self._wakeup_channel()
        if settings.runs_api:
            from sagequeue.stores import open_change_notices

            # Event feeds wait on the store's change notices where it sends them.
            self.change_notices = open_change_notices(store)
            if self.change_notices is not None:
                await self.change_notices.start()
            self.api_metrics.store = store
            self.api_metrics.start()
            self.control = control = ControlPlane(store, settings)
            from sagequeue.monitoring.cloudwatch import CloudWatch

            self.cloudwatch = cloudwatch = CloudWatch(
                store,
                region=settings.region,
                account_id=settings.account_id,
                metric_clock=self.metric_clock,
            )
            from sagequeue.autoscaling.operations import ApplicationAutoScaling

            self.autoscaling = ApplicationAutoScaling(
                store,
                cloudwatch,
                region=settings.region,
                account_id=settings.account_id,
            )
            await self._seed_buckets(objects)
            await control.apply_declarations(settings.resources)
        if settings.runs_worker:
            from sagequeue.dispatch.outbox import DELIVERY_CONCURRENCY
            from sagequeue.dispatch.worker import Worker
            from sagequeue.notifiers import TopicNotifier

            self.worker = worker = Worker(
                store,
                objects,
                settings,
                wakeups=self.wakeups,
                notifier=TopicNotifier(settings, max_concurrency=DELIVERY_CONCURRENCY),
            )
            await worker.start()
        self.ready = True
        if settings.runs_api:
            scheme = "https" if settings.tls_cert is not None else "http"
            print(
                f"sagequeue: listening on {scheme}://{settings.host}:{settings.port} "
                f"(role {settings.role}, data in {settings.data_dir.absolute()})",
                flush=True,
            )
            if settings.console_enabled:
                print(
                    f"sagequeue: web console at {scheme}://{settings.host}:{settings.port}/ui/",
                    flush=True,
                )
            else:
                log.warning("%s", console_refusal(settings))

    def _wakeup_channel(self) -> WakeupChannel:
        from sagequeue.dispatch.doorbell import DoorbellChannel
        from sagequeue.stores import open_wakeups

        # PostgreSQL: LISTEN/NOTIFY, across hosts. SQLite: worker processes of this data
        # dir are woken by datagram.
        return open_wakeups(self.settings, self.store) or DoorbellChannel(self.settings.data_dir)

    def _store(self) -> Store:
        """The queue + metadata store; requests are served only once start() opened it."""
        assert self.store is not None, "served before the application started"
        return self.store

    def _warn_if_objects_are_local_to_this_host(self) -> None:
        settings = self.settings
        shared_database = not settings.database_url.startswith("sqlite:")
        if shared_database and settings.object_store_url.startswith("file:"):
            log.warning(
                "the object store %s is a directory on this host: API and worker processes "
                "on other hosts cannot see its objects. A fleet on several hosts needs one "
                "S3 service: --object-store s3:// --s3-endpoint-url URL (docs/deploy.md)",
                settings.object_store_url,
            )

    async def _running(self, endpoint_name: str) -> dict[str, int]:
        from sagequeue.monitoring.backlog import running_instances

        return await running_instances(self._store(), endpoint_name)

    async def stop(self) -> None:
        self.ready = False
        if self.settings.runs_api:
            await self.api_metrics.stop()
        if self.worker is not None:
            await self.worker.stop()
            if self.worker.sender is not None:
                await self.worker.sender.notifier.close()
        if self.wakeups is not None:
            await self.wakeups.close()
        if self.change_notices is not None:
            await self.change_notices.close()
        if self.objects is not None:
            await self.objects.close()
        if self.store is not None:
            await self.store.close()

    async def _seed_buckets(self, objects: ObjectBackend) -> None:
        """Create the config file's buckets and upload its files when they changed."""
        from sagequeue.stores.objects import upload_file_if_changed

        for bucket in self.settings.buckets:
            name = bucket["Name"]
            await objects.ensure_bucket(name)
            for key, file_name in (bucket.get("Objects") or {}).items():
                path = Path(file_name)
                if not path.is_absolute():
                    path = self.settings.config_dir / path
                if not path.exists():
                    raise ConfigError(f"Buckets: {name}/{key}: file {path} does not exist")
                await upload_file_if_changed(objects, name, key, path)

    def on_enqueued(self, endpoint_name: str) -> None:
        if self.worker is not None:
            self.worker.wake(endpoint_name)
        if self.wakeups is not None:
            self.wakeups.ring(endpoint_name)

    def frontdoor(self) -> FrontDoor:
        from sagequeue.frontdoor.autoscaling import AutoScalingApi
        from sagequeue.frontdoor.cloudwatch import CloudWatchApi
        from sagequeue.frontdoor.control import ControlApi
        from sagequeue.frontdoor.logs import LogsApi
        from sagequeue.frontdoor.runtime import RuntimeApi
        from sagequeue.frontdoor.s3 import S3Api

        app = self

        async def healthz(request: Request) -> Response:
            status = 200 if app.ready else 503
            body = msgspec.json.encode({"status": "ok" if app.ready else "starting"})
            return Response(status, [("content-type", "application/json")], body)

        from sagequeue.frontdoor.console import ConsoleFiles
        from sagequeue.frontdoor.prometheus import PrometheusEndpoint

        settings = self.settings
        verifier = SigV4Verifier(self.keys, region=settings.region)
        policies = key_policies(settings)
        return FrontDoor(
            verifier,
            runtime=RuntimeApi(
                app._store,
                settings,
                self.on_enqueued,
                metrics=self.api_metrics,
                change_notices=lambda: app.change_notices,
            ),
            control=ControlApi(lambda: app.control, settings, max_body=settings.max_control_body),
            s3=S3Api(lambda: app.objects, region=settings.region, account_id=settings.account_id),
            services={
                "monitoring": CloudWatchApi(
                    lambda: app.cloudwatch,
                    settings.region,
                    settings.account_id,
                    max_body=settings.max_control_body,
                ),
                "application-autoscaling": AutoScalingApi(
                    lambda: app.autoscaling, max_body=settings.max_control_body
                ),
                "logs": LogsApi(lambda: app.store, settings),
            },
            policies=policies,
            ops={"/healthz": healthz},
            metrics=PrometheusEndpoint(
                lambda: app.store, verifier, policies, settings.metrics_token
            ),
            console=ConsoleFiles(
                enabled=settings.console_enabled,
                region=settings.region,
                refusal=console_refusal(settings),
            ),
            on_startup=[self.start],
            on_shutdown=[self.stop],
        )


def console_refusal(settings: Settings) -> str:
    """Why the web console is off (empty when it is on)."""
    if settings.console_enabled:
        return ""
    return (
        f"the web console (/ui) is off: the server listens on {settings.host}, not only "
        "on loopback, without TLS; give --tls-cert and --tls-key, or --insecure-ui to "
        "serve it over plain HTTP"
    )


def _announce(app: Application) -> None:
    settings = app.settings
    path = settings.credentials_path.absolute()
    verb = "generated" if app.generated_keys else "using"
    print(f"sagequeue: {verb} credentials in {path} (profile sagequeue)", flush=True)


def run_server(
    settings: Settings, on_secrets: Callable[[Iterable[str]], None] | None = None
) -> int:
    """Run until SIGTERM / SIGINT; returns the exit code. ``on_secrets`` learns the
    secret keys in use (so that logging can redact them)."""
    from sagequeue.stores import prepare_database

    # A database that cannot be used stops the start here, as one line (StartupError).
    asyncio.run(prepare_database(settings.database_url))
    app = Application(settings)
    if on_secrets is not None:
        on_secrets(app.keys.values())
    _announce(app)
    if not settings.runs_api:
        return asyncio.run(_run_worker_only(app))
    import uvicorn

    from sagequeue.frontdoor.server import HttpLimits, lane_protocol, raise_file_limit

    front_door = app.frontdoor()
    limits = HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_connections=raise_file_limit(settings.max_connections),
    )
    config = uvicorn.Config(
        front_door,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=lane_protocol(front_door, limits),
        ws="none",
        lifespan="on",
        access_log=False,
        # No proxy in front by default; its middleware costs every request.
        proxy_headers=False,
        log_level=settings.log_level,
        # Records go through the root handlers (and their redacting filter).
        log_config=None,
        # uvicorn declares an int but takes any number of seconds.
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=30,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert is not None else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key is not None else None,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it caught once it has shut down; a graceful stop
    # on SIGTERM / SIGINT is a success, so exit 0 then.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_after_graceful_stop)
    server.run()
    return 0 if server.started else 1


def _exit_after_graceful_stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


async def _run_worker_only(app: Application) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    print("sagequeue: worker running", flush=True)
    try:
        await stop.wait()
    finally:
        await app.stop()
    return 0
