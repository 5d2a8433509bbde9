"""qs-promoter: promote Qlik Sense apps across sites on approval, orchestrated by Prefect."""

__version__ = "0.1.0"
