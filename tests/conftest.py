# Its presence puts tests/ on sys.path (pytest prepend import mode), so tests can `import stub_openai`.
