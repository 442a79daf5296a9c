"""Planning: questions a planner asks of the ledger's history (the backtest)."""
