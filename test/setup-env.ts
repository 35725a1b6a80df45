// Tests read their own assertions, not the agent's info logs; VIPR_LOG_LEVEL=debug brings them back.
process.env.VIPR_LOG_LEVEL ??= 'warn';
