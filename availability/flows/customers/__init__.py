"""Customer identity: Shopify customers, order buyers, guests and POS customers to ERP
parties (docs/flows.md, "Customer identity")."""
