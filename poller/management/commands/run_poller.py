"""Run the poller: a long-lived service, or one tick (--once) for cron."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from poller.loop import Poller


class Command(BaseCommand):
    help = "Launch queued runs through SAGA and track them to their end."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Do one tick and exit (cron).")
        parser.add_argument(
            "--name",
            default="",
            help="Poller identity (default: the host name). Give each "
            "poller on one host its own name.",
        )
        parser.add_argument(
            "--interval", type=float, default=None, help="Seconds between idle ticks."
        )
        parser.add_argument(
            "--services", type=int, default=0, help="SAGA job services per resource."
        )

    def handle(self, *args, once: bool, name: str, interval, services: int, **options) -> None:
        poller = Poller(name=name, services_per_resource=services, cron=once)

        def stop(signum, frame):
            # Finish the current step, then leave; running jobs keep running and
            # are picked up again by the next poller with this name.
            poller.stop_requested = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if once:
            try:
                poller.end_stale_shells()
                poller.tick()
            finally:
                poller.close()
            return
        poller.run_forever(interval=interval)
        self.stdout.write(f"poller {poller.ident} stopped")
