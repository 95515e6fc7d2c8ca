# bench/policy/bench.mk: builds the policy call benchmark against the core,
# with the Makefile's own flags and objects. Read after the Makefile:
#   make -f Makefile -f bench/policy/bench.mk build/bench/policy_bench
$(B)/bench/policy_bench: bench/policy/policy_bench.c $(CORE_OBJ)
	mkdir -p $(B)/bench
	$(CC) $(CFLAGS) -Icore $(LDFLAGS) -o $@ $^ $(LDLIBS)
