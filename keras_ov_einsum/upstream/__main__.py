import sys

from .generator import main

if sys.argv[1:2] == ["keras-hub"]:
    from .keras_hub import main as keras_hub_main

    sys.exit(keras_hub_main(sys.argv[2:]))
sys.exit(main())
