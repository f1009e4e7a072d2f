_instruments = ("langchain-core >= 1.7, < 2",)
