"""``python -m adapters.shopify.simulator``."""

from adapters.shopify.simulator.server import main

main()
