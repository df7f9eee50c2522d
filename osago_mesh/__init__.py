"""The dev mesh: every service on one machine, as processes (`osago up`, the fault benchmark) or
inside one event loop (the functional tests), with Envoy or web_bridge as the browser's edge.

A floor of its own: it imports the services and `osago_common`; only `osago_cli`, `osago_bench`
and the tests import it, and no service imports it."""
