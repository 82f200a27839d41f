from keras.src.utils.tracking import DotNotTrackScope
from keras.src.utils.tracking import is_tracking_enabled

from keras_hub.src.tests.test_case import TestCase
from keras_hub.src.tokenizers.byte_pair_tokenizer import BytePairTokenizer


class BytePairTokenizerTrackingTest(TestCase):
    def setUp(self):
        super().setUp()
        self.merges = ["Ġ a", "Ġ t", "Ġ i", "Ġ b", "a i", "p l", "n e"]
        self.merges += ["Ġa t", "p o", "r t", "Ġt h", "ai r", "pl a", "po rt"]
        self.merges += ["Ġai r", "Ġa i", "pla ne"]
        vocabulary = []
        for merge in self.merges:
            a, b = merge.split(" ")
            vocabulary.extend([a, b, a + b])
        vocabulary += ["!", "<|endoftext|>"]
        self.vocabulary = {
            token: i for i, token in enumerate(sorted(set(vocabulary)))
        }
        self.input_data = [" airplane at airport", " a bit"]

    def _tokenizer(self):
        return BytePairTokenizer(
            vocabulary=self.vocabulary,
            merges=self.merges,
            _allow_python_workflow=True,
        )

    def test_vocabulary_and_merges_are_plain_values(self):
        tokenizer = self._tokenizer()
        # Not keras's tracking proxies, which inspect every item.
        self.assertIs(type(tokenizer.vocabulary), dict)
        self.assertIs(type(tokenizer.merges), list)
        self.assertEqual(tokenizer.vocabulary, self.vocabulary)
        self.assertEqual(tokenizer.merges, self.merges)
        # Only the call goes untracked.
        self.assertTrue(is_tracking_enabled())
        tokenizer.other_list = [1, 2]
        self.assertIsNot(type(tokenizer.other_list), list)
        with DotNotTrackScope():
            tokenizer.set_vocabulary_and_merges(self.vocabulary, self.merges)
            self.assertFalse(is_tracking_enabled())
        self.assertTrue(is_tracking_enabled())

    def test_tokens_as_when_tracked(self):
        tokenizer = self._tokenizer()
        tokens = [tokenizer(text) for text in self.input_data]
        for text, ids in zip(self.input_data, tokens):
            self.assertEqual(tokenizer.detokenize(ids), text)
        # The same tokens after a round trip through the assets, and after
        # the vocabulary was cleared and set again.
        dir_path = self.get_temp_dir()
        tokenizer.save_assets(dir_path)
        loaded = BytePairTokenizer(_allow_python_workflow=True)
        loaded.load_assets(dir_path)
        self.assertIs(type(loaded.vocabulary), dict)
        tokenizer.set_vocabulary_and_merges(None, None)
        self.assertIsNone(tokenizer.vocabulary)
        tokenizer.set_vocabulary_and_merges(self.vocabulary, self.merges)
        for text, ids in zip(self.input_data, tokens):
            self.assertAllEqual(loaded(text), ids)
            self.assertAllEqual(tokenizer(text), ids)
