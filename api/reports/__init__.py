"""Periodic reports (定期通报) per jurisdiction: computed from the store (compute), drawn as PDF
(pdf) and XLSX (xlsx), and mailed on a schedule (mail)."""
