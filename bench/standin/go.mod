module registrar.bench/standin

go 1.19
