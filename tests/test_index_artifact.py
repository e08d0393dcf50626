"""A DenseIndex through pt.Artifact's packaging: to_hf / from_hf round trip against a local stand-in for the Hub.

``to_hf`` packages the index (artifact.tar.lz4 + its .json + README.md) and hands the folder to huggingface_hub's
upload_folder, here a copy into a local directory; ``from_hf`` resolves ``hf:org/name`` to a URL, here one of an HTTP
server on 127.0.0.1 serving that directory, downloads, checks the SHA-256 and unpacks into PYTERRIER_HOME."""
from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pyterrier as pt
import pytest
from test_index import queries, random_corpus

from pyterrier_hybrid import DenseIndex


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip('huggingface_hub')
    import pyterrier._artifact as artifact
    hub = tmp_path / 'hub'

    def upload_folder(*, repo_id, folder_path, repo_type, revision):
        shutil.copytree(folder_path, hub / repo_id / revision)
        return f'{hub / repo_id / revision}'
    for name in ('create_repo', 'create_branch'):
        monkeypatch.setattr(huggingface_hub, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(huggingface_hub, 'upload_folder', upload_folder)
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_QuietHandler, directory=hub))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def resolve(parsed_url):
        repo, _, branch = parsed_url.path.partition('@')
        return artifact.UrlResolverResult(f'http://127.0.0.1:{server.server_port}/{repo}/{branch or "main"}/'
                                          'artifact.tar.lz4')
    monkeypatch.setattr(artifact, '_hf_url_resolver', resolve)
    monkeypatch.setenv('PYTERRIER_HOME', str(tmp_path / 'pyterrier-home'))
    for proxy in ('no_proxy', 'NO_PROXY'):
        monkeypatch.setenv(proxy, '127.0.0.1')
    yield hub
    server.shutdown()


def test_to_hf_and_from_hf_round_trip_a_dense_index(tmp_path, local_hub):
    corpus = random_corpus(n=200)
    index = DenseIndex(tmp_path / 'xquad.index')
    index.indexer(encoder_metadata={'model': 'intfloat/multilingual-e5-small', 'dimension': 16,
                                    'similarity': 'cosine'}).index(corpus)
    index.to_hf('org/xquad-r.hybrid_flex')
    assert {'artifact.tar.lz4', 'artifact.tar.lz4.json', 'README.md'} <= {
        p.name for p in (local_hub / 'org' / 'xquad-r.hybrid_flex' / 'main').iterdir()}

    restored = pt.Artifact.from_hf('org/xquad-r.hybrid_flex')
    assert isinstance(restored, DenseIndex) and restored.index_path != index.index_path
    assert restored.metadata == index.metadata and restored.metadata['model'] == 'intfloat/multilingual-e5-small'
    german = [d['docno'] for d in corpus if d['docno'].startswith('de-')]
    for retriever in (lambda i: i.retriever(num_results=10), lambda i: i.retriever(num_results=None, docnos=german)):
        assert retriever(restored)(queries()).equals(retriever(index)(queries()))
    assert DenseIndex.from_hf('org/xquad-r.hybrid_flex').index_path == restored.index_path  # unpacked once
