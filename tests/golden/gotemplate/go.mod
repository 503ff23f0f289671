module registrar/tests/golden/gotemplate

go 1.19
