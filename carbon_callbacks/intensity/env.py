"""The environment variables the intensity room reads, named once.

``resolution`` documents what each one does; the live providers read their token and base URLs
from here too, so a renamed variable cannot drift between the two.
"""

from __future__ import annotations

INTENSITY_ENV = "CARBON_CALLBACKS_INTENSITY"
CLOUD_REGION_ENV = "CARBON_CALLBACKS_CLOUD_REGION"
ZONE_ENV = "CARBON_CALLBACKS_ZONE"
TOKEN_ENV = "CARBON_CALLBACKS_ELECTRICITYMAPS_TOKEN"
ELECTRICITYMAPS_URL_ENV = "CARBON_CALLBACKS_ELECTRICITYMAPS_URL"
PROVIDER_ENV = "CARBON_CALLBACKS_PROVIDER"
UK_POSTCODE_ENV = "CARBON_CALLBACKS_UK_POSTCODE"
UK_CARBON_INTENSITY_URL_ENV = "CARBON_CALLBACKS_UK_CARBON_INTENSITY_URL"

ENV_VARS = (
    INTENSITY_ENV,
    CLOUD_REGION_ENV,
    ZONE_ENV,
    TOKEN_ENV,
    ELECTRICITYMAPS_URL_ENV,
    PROVIDER_ENV,
    UK_POSTCODE_ENV,
    UK_CARBON_INTENSITY_URL_ENV,
)
"""Every variable above, e.g. for a test that clears the developer's shell."""
